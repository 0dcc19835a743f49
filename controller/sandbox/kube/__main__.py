"""``python -m controller.sandbox.kube``: serve the emulator until SIGINT/SIGTERM."""
import sys

from controller.sandbox.kube.server import main

sys.exit(main())
