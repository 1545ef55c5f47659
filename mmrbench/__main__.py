import sys

from mmrbench.cli import main

sys.exit(main())
