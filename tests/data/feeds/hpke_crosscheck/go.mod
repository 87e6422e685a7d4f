module safeshare.example/hpke_crosscheck

go 1.26
