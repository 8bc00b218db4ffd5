import sys

from whichlora.cli import main

sys.exit(main())
