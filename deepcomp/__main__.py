import sys

from deepcomp.cli import main

sys.exit(main())
