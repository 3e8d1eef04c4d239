"""The REST API under /api/v1: create_api (app.py) and one router per area beside it."""
