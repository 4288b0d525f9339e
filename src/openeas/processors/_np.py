"""numpy for the processors. Each processor extra brings numpy; when it is missing, a processor
stops at start with the extra to install instead of a bare ImportError traceback."""

from __future__ import annotations

import sys

try:
    import numpy as np
except ImportError as exc:  # pragma: no cover - exercised only without numpy
    from openeas.processors import PROCESSOR_EXTRAS, known_processors

    main = getattr(sys.modules.get("__main__"), "__spec__", None)
    module = getattr(main, "name", "").removesuffix(".__main__")
    names = {m: n for n, m in known_processors().items()}
    if module not in names:
        raise
    name = names[module]
    print(
        f"processor {name!r} needs numpy, which cannot be imported ({exc}). "
        f"Install it with: pip install 'openeas[{PROCESSOR_EXTRAS[name]}]'",
        file=sys.stderr,
    )
    raise SystemExit(2) from exc

__all__ = ["np"]
