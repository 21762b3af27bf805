"""`python -m processors worker ...`: Faust's own command line for the app."""

from processors.app import app

app.main()
