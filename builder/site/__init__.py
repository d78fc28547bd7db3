"""The site: manifests, content/ and templates/ rendered into site/ (render, content, passes, placement,
images, templating, sitefiles, rendered, memo, edition), its search index, the PDF and the live preview."""
