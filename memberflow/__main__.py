from memberflow.cli import app

app(prog_name="memberflow")
