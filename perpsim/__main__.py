from perpsim.cli import main

main()
