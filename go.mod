module github.com/realmsync/realmsync

go 1.26
