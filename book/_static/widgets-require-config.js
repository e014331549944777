// Loaded between require.js and the widget manager (embed-amd.js), see _config.yml.
// The widget modules find their own files (Font Awesome fonts) next to their module URLs; by
// default require.js puts those URLs beside the page, where no fonts are. Point them at the
// vendored folder instead, which sits next to this script whatever the page's depth.
(function () {
  var folder = new URL("vendor/html-manager", document.currentScript.src).href;
  require.config({
    paths: {
      "@jupyter-widgets/html-manager/dist": folder,  // @jupyter-widgets/html-manager/dist/libembed-amd
      "@jupyter-widgets": folder,                    // @jupyter-widgets/base, .../controls
    },
  });
})();
