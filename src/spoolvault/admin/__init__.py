"""Administration: the audited operations (actions.py) and the admin web pages (web.py)."""
