"""One child across agencies (issue 13, Children Act 2004 s.16LC as amended).

- :mod:`broker.identity.nhs`: the consistent identifier (NHS number, modulus 11)
  and the unique pupil number, checked and put in canonical form.
- :mod:`broker.identity.pseudonym`: the partnership pseudonym, a keyed HMAC
  under a versioned key the router holds.
"""
