"""Release stations: the Standard (web) release station, the MFD device API, Fast Release,
and who may release which job."""
