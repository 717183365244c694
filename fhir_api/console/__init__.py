"""The web console (issue 16): static files served under /console, and the sign-in of people.

The console is HTML, CSS and JavaScript modules with no build step; every action it offers is an
admin API call, made with the session cookie this package's sign-in sets (fhir_api/auth/sessions.py).
Only the application (fhir_api/app.py) imports it.
"""
