"""The site engine: finds section modules, caches their outputs by content hash, renders the site.

It knows nothing about diffusion, and no module here imports torch at import time, so the
site can be rendered and tested on a machine without it.
"""


class BuildError(RuntimeError):
    """A problem the user can fix; its message is one paragraph and says how."""
