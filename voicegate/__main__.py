from voicegate.server.cli import main

raise SystemExit(main())
