"""Example projects built on first use from data that ships inside packages."""
