from __future__ import annotations

from inferline.cli import main

main()
