console.log("image: evil:latest");
