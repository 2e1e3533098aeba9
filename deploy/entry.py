"""spark-submit's main file for every lakecurate command: `entry.py COMMAND [ARGS ...]`.

It sits outside `jobs/` on purpose: `spark-submit jobs/x.py` puts `jobs/` first on
`sys.path`, where `jobs/select.py` would shadow the standard library's `select`.
The code itself comes from the `--py-files` zip, a packed venv, or the image.
"""

import sys

from lakecurate.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
