#!/usr/bin/env python
"""Download and unpack real datasets of the course catalog.

    python data_scripts/fetch.py --list
    python data_scripts/fetch.py cifar10 [cifar100 ...] [--root DIR] [--force] [--quiet]

Archives go to ROOT/downloads/ (resumable: run the command again after an interruption);
the dataset folder appears in ROOT. See course_lib/fetch.py and course_lib/catalog.json.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # works without installing

from course_lib.fetch import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
