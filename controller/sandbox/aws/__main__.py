"""``python -m controller.sandbox.aws``: serve the AWS sandbox until SIGINT/SIGTERM."""
import sys

from controller.sandbox.aws.server import main

sys.exit(main())
