module example.com/calltree

go 1.21
