module example.com/oldfixture

go 1.16
