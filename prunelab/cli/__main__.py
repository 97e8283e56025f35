from .commands import main

if __name__ == "__main__":  # `python -m prunelab.cli`; importing this file runs nothing
    raise SystemExit(main())
