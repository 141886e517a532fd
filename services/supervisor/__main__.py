import sys

from services.supervisor.cli import main

sys.exit(main())
