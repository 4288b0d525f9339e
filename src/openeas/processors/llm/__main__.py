from openeas.processors.llm.server import main

main()
