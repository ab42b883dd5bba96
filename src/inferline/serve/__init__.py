"""The HTTP model server behind `inferline serve`; `app.py` has the route table."""
