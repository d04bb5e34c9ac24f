"""``medmoe app``: a local web page to try a trained model on one's own images.

A standard-library ``ThreadingHTTPServer`` (``server.py``) serves one static page
(``static/index.html``, plain HTML/JS, no external assets) and one JSON endpoint that runs
``analyse.py``. No web framework: Gradio, what this field's demos use, brings dozens of
dependencies and reaches for the network (analytics, CDN fonts, share links), while this page needs
one upload, two text fields and three results, which fit in a page with no build step.
"""
