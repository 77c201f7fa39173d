from iclgd.cli import run

run()
