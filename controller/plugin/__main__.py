import sys

from controller.plugin.main import main

sys.exit(main())
