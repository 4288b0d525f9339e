"""The control plane's REST API (/api/v2, admin token): thin handlers over the service layer.

`app.py` wires the app (`create_app`), `routes.py` holds the route-table types and the auth
hook's mounting, `auth.py` the authenticators, `inputs.py` request reading, `views.py` the JSON
shapes, and `services.py`, `gateways.py`, `groups.py` the handlers per resource.
"""
