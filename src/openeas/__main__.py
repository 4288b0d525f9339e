from openeas.cli.main import main

main()
