"""``python -m kneelib`` is the ``kneelib`` command."""

from kneelib.cli import main

raise SystemExit(main())
