from goggleqc.cli import main

if __name__ == "__main__":  # worker processes import this module again; only the command runs main
    main()
