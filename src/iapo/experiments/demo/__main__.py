"""`python -m iapo.experiments.demo`: see `iapo.experiments.demo`."""

from iapo.experiments.demo.cli import main

if __name__ == "__main__":  # worker processes import this module again under another name
    main()
