from hivegen.cli import main

raise SystemExit(main())
