"""What is inside a job's bytes: the PJL job header (`pjl`) and a cheap page count (`pages`).

Both only look at a document as it streams past; neither changes a byte of it.
"""
