import sys

from mmrbench.mmad.commands import main

sys.exit(main())
