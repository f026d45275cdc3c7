"""REST API: caveclient-compatible routes over the query engine and the live tables.

:func:`matengine.api.app.create_app` builds the application.
"""
