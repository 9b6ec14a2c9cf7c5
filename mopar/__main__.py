import sys

from mopar.cli.main import main

sys.exit(main())
