"""Release stations: the MFD device API, Fast Release, and who may release which job."""
