"""The clearing centre over HTTP: a FastAPI application on the use cases of ``tongka``.

Routes parse, authorise and present; every business rule stays in the use cases and the rooms
below (docs/service.md).
"""
