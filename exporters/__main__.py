from exporters.cli import app

if __name__ == "__main__":  # not in the spawned workers of exporters/parallel.py
    app(prog_name="python -m exporters")
