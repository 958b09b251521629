"""Authentication, authorization and accounting backends behind one question:
"authenticate this (user, method, proof)" → a decision with attributes."""
