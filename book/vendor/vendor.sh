#!/usr/bin/env bash
# Fetch the browser libraries the built book needs, at pinned versions, from the npm registry,
# and copy only the files the pages load into book/_static/vendor/ (committed).
#
# Why: by default a Jupyter Book page loads vega, require.js, the ipywidgets HTML manager and
# MathJax from public CDNs, so a reader offline or behind a firewall sees "Error loading script".
# Re-run this after changing a version below, then rebuild the book and run
# tests/test_book_browser.py, which fails on any request to another host.
#
# Versions: vega-lite is the one altair 6.3 writes specs for (altair.VEGALITE_VERSION = 6.4.1);
# altair asks for vega 6 and vega-embed 7. The html-manager 1.0.x bundle renders the widget
# state that ipywidgets 8 saves. MathJax 3 is what Sphinx's mathjax extension configures.
set -euo pipefail

VEGA=6.4.0
VEGA_LITE=6.4.1
VEGA_EMBED=7.3.0
REQUIREJS=2.3.7
HTML_MANAGER=1.0.15
MATHJAX=3.2.2

here="$(cd "$(dirname "$0")" && pwd)"
dest="$here/../_static/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

fetch() {  # fetch NAME@VERSION DIR: unpack the registry tarball into $work/DIR
    mkdir -p "$work/$2"
    (cd "$work" && npm pack --silent "$1" > "$2.name")
    tar -xzf "$work/$(cat "$work/$2.name")" -C "$work/$2" --strip-components=1
}

fetch "vega@$VEGA" vega
fetch "vega-lite@$VEGA_LITE" vega-lite
fetch "vega-embed@$VEGA_EMBED" vega-embed
fetch "requirejs@$REQUIREJS" requirejs
fetch "@jupyter-widgets/html-manager@$HTML_MANAGER" html-manager
fetch "mathjax@$MATHJAX" mathjax

out="$work/out"
mkdir -p "$out"/{vega,vega-lite,vega-embed,requirejs,html-manager}
mkdir -p "$out/mathjax/output/chtml/fonts" "$out/mathjax/input/tex"

# Source maps are not shipped, so drop the comments that point at them.
copy_js() { grep -v '^//# sourceMappingURL=' "$1" > "$2"; }

copy_js "$work/vega/build/vega.min.js" "$out/vega/vega.min.js"
copy_js "$work/vega-lite/build/vega-lite.min.js" "$out/vega-lite/vega-lite.min.js"
copy_js "$work/vega-embed/build/vega-embed.min.js" "$out/vega-embed/vega-embed.min.js"
copy_js "$work/requirejs/require.js" "$out/requirejs/require.js"
# The widget bundle loads its Font Awesome fonts from its own folder; browsers take the woff2.
copy_js "$work/html-manager/dist/embed-amd.js" "$out/html-manager/embed-amd.js"
cp "$work"/html-manager/dist/*.woff2 "$out/html-manager/"
# MathJax finds its fonts and on-demand TeX extensions relative to tex-chtml.js.
cp "$work/mathjax/es5/tex-chtml.js" "$out/mathjax/"
cp -r "$work/mathjax/es5/output/chtml/fonts/woff-v2" "$out/mathjax/output/chtml/fonts/"
cp -r "$work/mathjax/es5/input/tex/extensions" "$out/mathjax/input/tex/"
rm "$out/mathjax/input/tex/extensions/all-packages.js"  # only for builds without autoload
for pkg in vega vega-lite vega-embed mathjax; do
    cp "$work/$pkg/LICENSE" "$out/$pkg/LICENSE"
done

{
    echo "# Written by book/vendor/vendor.sh: package, version, licence (from each package.json)."
    for pkg in vega vega-lite vega-embed requirejs html-manager mathjax; do
        node -e 'const p=require(process.argv[1]); console.log(`${p.name} ${p.version} ${p.license}`)' \
            "$work/$pkg/package.json"
    done
} > "$out/VERSIONS.txt"

rm -rf "$dest.old"
[ -d "$dest" ] && mv "$dest" "$dest.old"
mkdir -p "$(dirname "$dest")"
mv "$out" "$dest"
rm -rf "$dest.old"
du -sh "$dest"
