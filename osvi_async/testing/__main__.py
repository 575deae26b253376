"""``python -m osvi_async.testing``: serve the emulator until interrupted."""

from osvi_async.testing._serve import main

raise SystemExit(main())
