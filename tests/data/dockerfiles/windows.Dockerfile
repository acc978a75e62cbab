# escape=`
FROM mcr.microsoft.com/windows/servercore:ltsc2022 AS base
COPY --from=mcr.microsoft.com/powershell:lts-nanoserver-ltsc2022 `
     C:\ C:\
FROM base
RUN dir c:\
