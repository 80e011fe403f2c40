from goggleqc.cli import main

main()
