"""``python -m tdnet_cli`` (also what torchrun runs: ``torchrun ... -m tdnet_cli train``)."""

from tdnet_cli.cli.app import main

if __name__ == "__main__":
    main()
