// On the search page of a book opened from disk (file://): the browser lets the page read the
// search index, so matching pages are listed, but not the pages themselves, so no excerpts show.
// Say so, and how to serve the book to get them.
document.addEventListener("DOMContentLoaded", () => {
  if (window.location.protocol !== "file:") return;
  const results = document.getElementById("search-results");
  if (!results) return;
  const note = document.createElement("p");
  note.className = "admonition note search-from-disk";
  note.innerHTML = "Opened from disk, search lists the pages that match but shows no excerpts: the browser " +
    "does not let a page read the others. To see them, serve the book: " +
    "<code>python3 -m http.server -d _build/html</code>, then open " +
    "<a href=\"http://localhost:8000/search.html\">http://localhost:8000/search.html</a>.";
  results.before(note);
});
