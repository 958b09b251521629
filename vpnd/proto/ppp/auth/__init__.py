"""PPP authentication protocols (PAP, CHAP-MD5, MS-CHAPv1, MS-CHAPv2) in both roles."""
