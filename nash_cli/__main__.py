"""`python -m nash_cli ...` runs the CLI; `accelerate launch -m nash_cli distill ...` relies on it."""

from nash_cli.cli.app import main

if __name__ == "__main__":
    main()
