"""The site engine: finds section modules, caches their outputs by content hash, renders the site.

It knows nothing about diffusion, and no module here imports torch at import time, so the
site can be rendered and tested on a machine without it.
"""


class BuildError(RuntimeError):
    """A problem the user can fix; its message is one paragraph and says how."""


def _import_on_first_use(name: str) -> None:
    """Register module ``name`` so that it executes when one of its attributes is first read (the standard
    library's ``importlib.util.LazyLoader``). ``builder.figures`` imports numpy and Pillow, which only a
    section that writes a figure needs: listing the sections, or a build with nothing to compute, never
    does, and it is a tenth of their time. (Its source, which every key fingerprints, stays as it is.)"""
    import importlib.util
    import sys

    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    # The package's attribute too: ``from . import figures`` then binds the module without importing it
    # again (an import would read its __spec__, which is the first use that executes it).
    parent, _, child = name.rpartition(".")
    setattr(sys.modules[parent], child, module)


_import_on_first_use("builder.figures")
