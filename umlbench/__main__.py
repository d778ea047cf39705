from umlbench.cli import main

main()
