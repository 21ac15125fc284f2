from alzmri.cli.main import main

main()
